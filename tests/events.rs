//! Events on real binaries: listener plugins (jsonl, webhook) loaded by the master, the SSE
//! stream and its resumption, and a slow listener that must not slow scheduling.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloha_e2e::{target_dir, wait_for, Api, Cluster};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(40);

fn plugin(name: &str) -> PathBuf {
    let p = target_dir().join(format!("libaloha_listener_{name}.so"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace`",
        p.display()
    );
    p
}

fn listener_arg(name: &str, config: Value) -> Vec<String> {
    vec![
        "--listener".into(),
        format!("{}={}", plugin(name).display(), config),
    ]
}

/// Every event the master retains, oldest first.
fn all_events(api: &Api) -> Vec<Value> {
    let client = reqwest::blocking::Client::new();
    let text = client
        .get(format!("{}/api/v1/events?after=0&follow=false", api.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    sse_data(&text)
}

fn sse_data(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("seq").is_some())
        .collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn assert_contiguous(s: &[u64]) {
    assert!(!s.is_empty());
    for w in s.windows(2) {
        assert_eq!(w[1], w[0] + 1, "sequence numbers jump or repeat: {s:?}");
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn the_jsonl_listener_loses_nothing_across_a_master_kill9() {
    let mut c = Cluster::start_with("3s", &[("w1", 4)], |dir| {
        listener_arg("jsonl", json!({"path": dir.join("events.jsonl")}))
    });
    let file = c.dir.path().join("events.jsonl");
    let api = c.api().clone();
    let first: Vec<String> = (0..3)
        .map(|i| api.submit_cmd(&format!("a{i}"), &["true"], json!({})))
        .collect();
    for id in &first {
        api.wait_state(id, "FINISHED", T);
    }
    let long = api.submit_cmd("long", &["sleep", "600"], json!({}));
    api.wait_state(&long, "RUNNING", T);
    let log_dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&log_dir);
    let api = c.api().clone();
    api.wait_state(&long, "RUNNING", T);
    let more: Vec<String> = (0..3)
        .map(|i| api.submit_cmd(&format!("b{i}"), &["true"], json!({})))
        .collect();
    for id in &more {
        api.wait_state(id, "FINISHED", T);
    }
    let last = *seqs(&all_events(&api)).last().unwrap();
    let lines = wait_for("the jsonl file to catch up with the log", T, || {
        let lines = read_jsonl(&file);
        (lines.last()?["seq"].as_u64()? == last).then_some(lines)
    });
    let s = seqs(&lines);
    assert_contiguous(&s);
    // Everything the apps went through is in the file, before and after the crash.
    for id in first.iter().chain(&more) {
        let states: Vec<&str> = lines
            .iter()
            .filter(|e| e["app_id"] == id.as_str() && e["type"] == "app_state_changed")
            .map(|e| e["new_state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"],
            "{id}"
        );
    }
    // The crash shows: the running app went UNKNOWN and back, and the new leadership is there.
    assert!(lines
        .iter()
        .any(|e| e["app_id"] == long.as_str() && e["new_state"] == "UNKNOWN"));
    assert!(
        lines
            .iter()
            .filter(|e| e["type"] == "leader_changed")
            .count()
            >= 1
    );
}

#[test]
fn an_sse_client_resumes_after_a_disconnect_without_a_gap() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api().clone();
    let id = api.submit_cmd("before", &["true"], json!({}));
    api.wait_state(&id, "FINISHED", T);

    // First session: read a few events, then hang up.
    let client = reqwest::blocking::Client::builder()
        .timeout(None::<Duration>)
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/api/v1/events?after=0", api.base))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut got = Vec::new();
    let mut reader = BufReader::new(resp);
    let mut line = String::new();
    while got.len() < 4 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(d) = line.trim_end().strip_prefix("data: ") {
            got.push(serde_json::from_str::<Value>(d).unwrap());
        }
    }
    drop(reader);
    let last_id = got.last().unwrap()["seq"].as_u64().unwrap();

    // While disconnected, more happens.
    let during: Vec<String> = (0..3)
        .map(|i| api.submit_cmd(&format!("during{i}"), &["true"], json!({})))
        .collect();
    for id in &during {
        api.wait_state(id, "FINISHED", T);
    }
    let last = *seqs(&all_events(&api)).last().unwrap();

    // Second session: Last-Event-ID brings exactly what was missed, then live events.
    let resp = client
        .get(format!("{}/api/v1/events", api.base))
        .header("Last-Event-ID", last_id.to_string())
        .send()
        .unwrap();
    let mut reader = BufReader::new(resp);
    while got.last().unwrap()["seq"].as_u64().unwrap() < last {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(d) = line.trim_end().strip_prefix("data: ") {
            got.push(serde_json::from_str::<Value>(d).unwrap());
        }
    }
    let s = seqs(&got);
    assert_eq!(s[0], 1);
    assert_contiguous(&s);
    // Filters apply: only this app's events.
    let text = client
        .get(format!(
            "{}/api/v1/events?after=0&follow=false&app_id={}",
            api.base, during[0]
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let only = sse_data(&text);
    assert_eq!(only.len(), 4);
    assert!(only.iter().all(|e| e["app_id"] == during[0].as_str()));
    let bad = client
        .get(format!("{}/api/v1/events?type=nope", api.base))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    // alohactl prints the same history.
    let (code, out, err) = c.ctl(&["events"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count() as u64, last, "{out}");
    assert!(out.contains("app_state_changed"));
}

/// What the hook received: each accepted body with its `x-aloha-event-seq` header.
type Received = Arc<Mutex<Vec<(Value, Option<u64>)>>>;

/// A tiny HTTP server for webhooks: records each request body and answers as told.
struct Hook {
    port: u16,
    bodies: Received,
    delay_ms: Arc<AtomicU32>,
    fail_next: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hook = Hook {
            port,
            bodies: Arc::default(),
            delay_ms: Arc::default(),
            fail_next: Arc::default(),
            stop: Arc::default(),
        };
        let (bodies, delay, fail, stop) = (
            hook.bodies.clone(),
            hook.delay_ms.clone(),
            hook.fail_next.clone(),
            hook.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = serve(s, &bodies, &delay, &fail);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        hook
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<(Value, Option<u64>)> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    s: TcpStream,
    bodies: &Mutex<Vec<(Value, Option<u64>)>>,
    delay: &AtomicU32,
    fail: &AtomicU32,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut len = 0;
    let mut seq = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = l.strip_prefix("x-aloha-event-seq:") {
            seq = v.trim().parse().ok();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst) as u64));
    let failing = fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    if !failing {
        bodies
            .lock()
            .unwrap()
            .push((serde_json::from_slice(&body).unwrap_or(Value::Null), seq));
    }
    let mut w = s;
    write!(
        w,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    w.flush()
}

#[test]
fn a_slow_webhook_never_delays_placement_and_gets_every_event_in_order() {
    let hook = Hook::start();
    hook.delay_ms.store(1500, Ordering::SeqCst);
    let url = hook.url();
    let c = Cluster::start_with("3s", &[("w1", 8)], |_| {
        listener_arg("webhook", json!({"url": url, "timeout_ms": 5000}))
    });
    let api = c.api().clone();
    let start = Instant::now();
    let ids: Vec<String> = (0..6)
        .map(|i| api.submit_cmd(&format!("s{i}"), &["sleep", "600"], json!({})))
        .collect();
    for id in &ids {
        api.wait_state(id, "RUNNING", T);
    }
    let took = start.elapsed();
    // 6 apps × 3 events at 1.5 s each would be 27 s; placement did not wait for any of it.
    assert!(
        took < Duration::from_secs(10),
        "placement took {took:?} behind a slow listener"
    );
    assert!(
        hook.received().len() < 6,
        "the webhook is still far behind: {}",
        hook.received().len()
    );

    // The receiver speeds up: every event arrives, in order, none lost.
    hook.delay_ms.store(0, Ordering::SeqCst);
    let last = *seqs(&all_events(&api)).last().unwrap();
    let got = wait_for("the webhook to receive every event", T, || {
        let got = hook.received();
        (got.last()?.0["seq"].as_u64()? == last).then_some(got)
    });
    let s: Vec<u64> = got
        .iter()
        .map(|(b, _)| b["seq"].as_u64().unwrap())
        .collect();
    assert_contiguous(&s);
    assert!(
        got.iter().all(|(b, h)| b["seq"].as_u64() == *h),
        "the seq header matches the body"
    );
}

#[test]
fn the_webhook_listener_retries_when_the_receiver_answers_500() {
    let hook = Hook::start();
    let url = hook.url();
    let c = Cluster::start_with("3s", &[("w1", 2)], |_| {
        listener_arg(
            "webhook",
            json!({"url": url, "initial_backoff_ms": 50, "max_attempts": 3}),
        )
    });
    let api = c.api().clone();
    // The next five requests fail: more than one delivery's attempts, so the master's own
    // retry (after the plugin gives up) is exercised too.
    hook.fail_next.store(5, Ordering::SeqCst);
    let id = api.submit_cmd("retried", &["true"], json!({}));
    api.wait_state(&id, "FINISHED", T);
    let last = *seqs(&all_events(&api)).last().unwrap();
    let got = wait_for("every event despite the 500s", T, || {
        let got = hook.received();
        (got.last()?.0["seq"].as_u64()? == last).then_some(got)
    });
    let s: Vec<u64> = got
        .iter()
        .map(|(b, _)| b["seq"].as_u64().unwrap())
        .collect();
    assert_contiguous(&s);
    assert_eq!(
        hook.fail_next.load(Ordering::SeqCst),
        0,
        "the 500s were really served"
    );
    let states: Vec<&str> = got
        .iter()
        .filter(|(b, _)| b["app_id"] == id.as_str())
        .map(|(b, _)| b["new_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"]);
}

#[test]
fn alohactl_events_follow_reconnects_across_a_master_crash_without_a_gap() {
    let mut c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api().clone();
    let mut cmd = std::process::Command::new(aloha_e2e::bin("alohactl"));
    cmd.args([
        "--master", &api.base, "--output", "json", "events", "--follow", "--after", "0",
    ]);
    let follower = aloha_e2e::Proc::spawn("follow", cmd, c.dir.path());
    let a = api.submit_cmd("before", &["true"], json!({}));
    api.wait_state(&a, "FINISHED", T);
    let log_dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&log_dir);
    let api = c.api().clone();
    let b = api.submit_cmd("after", &["true"], json!({}));
    api.wait_state(&b, "FINISHED", T);
    let last = *seqs(&all_events(&api)).last().unwrap();
    let printed = wait_for("alohactl to print every event", T, || {
        let text = std::fs::read_to_string(follower.log.clone()).ok()?;
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        (events.last()?["seq"].as_u64()? == last).then_some(events)
    });
    let s = seqs(&printed);
    assert_eq!(s[0], 1);
    assert_contiguous(&s);
}

#[test]
fn a_position_past_the_end_of_the_log_is_refused() {
    let c = Cluster::start("3s", &[]);
    let api = c.api();
    let client = reqwest::blocking::Client::new();
    for (query, header) in [
        ("?after=18446744073709551615&follow=false", None),
        ("?follow=false", Some("18446744073709551615")),
        ("?after=999999&follow=false", None),
    ] {
        let mut req = client.get(format!("{}/api/v1/events{query}", api.base));
        if let Some(h) = header {
            req = req.header("Last-Event-ID", h);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 400, "{query} {header:?}");
        let body: Value = r.json().unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("past the last event"),
            "{body}"
        );
    }
    // The last event itself is a fine position: nothing newer yet.
    let last = all_events(api).last().unwrap()["seq"].as_u64().unwrap();
    let r = client
        .get(format!(
            "{}/api/v1/events?after={last}&follow=false",
            api.base
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(sse_data(&r.text().unwrap()).is_empty());
}

#[test]
fn a_master_that_stepped_down_serves_the_new_leaders_events() {
    use aloha_e2e::etcd::EtcdCluster;
    let dir = tempfile::Builder::new()
        .prefix("aloha-events-stepdown-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let masters = aloha_e2e::ha_masters(&etcd, dir.path());
    let old = aloha_e2e::leader_of(&masters, T);
    let new = 1 - old;
    let first = masters[old]
        .api
        .submit(json!({"name": "before", "kind": "process"}));
    // Paused past its lease: the other master takes over; then the old one runs again.
    masters[old].proc.signal(libc::SIGSTOP);
    wait_for("the other master to lead", T, || {
        (aloha_e2e::role_of(&masters[new]).as_deref() == Some("ALIVE")).then_some(())
    });
    masters[old].proc.signal(libc::SIGCONT);
    wait_for("the old leader to step down", T, || {
        (aloha_e2e::role_of(&masters[old]).as_deref() == Some("STANDBY")).then_some(())
    });
    // A stream on the old leader, from the last event it knows of: it must flow with what the
    // new leader writes (before the fix it read its frozen in-memory tail and stalled).
    let known = all_events(&masters[old].api);
    let from = known.last().unwrap()["seq"].as_u64().unwrap();
    let mut stream =
        TcpStream::connect(masters[old].api.base.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "GET /api/v1/events?type=app_state_changed&after={from} HTTP/1.0\r\nHost: x\r\n\
         Accept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let after = masters[new]
        .api
        .submit(json!({"name": "after", "kind": "process"}));
    let id = after["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + T;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(&id) {
        match stream.read(&mut buf) {
            Ok(0) => panic!("the old leader's stream ended without the new app: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the old leader's stream stalled: {seen}"
        );
    }
    // And a plain read of its log is the cluster's whole log.
    let events = all_events(&masters[old].api);
    assert_contiguous(&seqs(&events));
    assert!(events.iter().any(|e| e["app_id"] == first["id"]));
    assert!(events.iter().any(|e| e["app_id"] == id.as_str()));
    drop(masters);
    drop(etcd);
}
